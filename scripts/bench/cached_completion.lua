-- wrk script: the same /v1/completions request again and again (after the first, every
-- answer comes from the response cache). Usage:
--   wrk -t2 -c32 -d10s --latency -s scripts/bench/cached_completion.lua http://127.0.0.1:8080
wrk.method = "POST"
wrk.path = "/v1/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tiny-gpt2","prompt":"The cache answers this","max_tokens":16,"seed":7}'
