#pragma once
// POST /v1/chat/completions as an adapter over /v1/completions: the messages become a
// completions request (the model's chat template, then the same parsing and tokenizing as
// /v1/completions). HttpSession::start_chat runs it on the CPU pool, then exactly as a
// completions request (run_completions: admission, SSE, usage) with chat_reply_sink turning
// each answer into its chat shape.
#include "writeup/api/openai_completions.hpp"
#include "writeup/server/router.hpp"
#include "writeup/service/completion_service.hpp"

namespace writeup::server {

struct PreparedChat {
  api::CompletionRequest request;
  service::Prepared prepared;
};

// Throws api::ApiError (400 bad fields, 404 unknown model, 415 body type, 500 a bad template).
PreparedChat prepare_chat(const Request& req, const ServerContext& ctx, const api::CompletionLimits& limits);

}  // namespace writeup::server
