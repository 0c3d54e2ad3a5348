-- Pipelined requests for wrk (used by clients/compare_wrk.py).
-- Each connection sends DEPTH copies of the request in one write and sends the next batch once
-- all DEPTH responses are in (wrk's own pipelining). DEPTH is the first script argument:
--   wrk -s clients/wrk_pipeline.lua URL -- 16

local depth = 16

function init(args)
  depth = tonumber(args[1]) or depth
  local copies = {}
  for i = 1, depth do
    copies[i] = wrk.format()
  end
  batch = table.concat(copies)
end

function request()
  return batch
end
