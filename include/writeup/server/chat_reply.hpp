#pragma once
// /v1/chat/completions answers: a ReplySink that turns each /v1/completions answer made for a
// chat request (one JSON answer, or SSE chunks) into its chat shape before it reaches the
// connection. Error answers and error events pass unchanged.
#include "writeup/server/reply_events.hpp"

namespace writeup::server {

ReplySink chat_reply_sink(ReplySink inner);

}  // namespace writeup::server
