-- retry_execution(execution id, note, retry budget, now) -> {'none'} | {'queued'} | {'exhausted', ...}
if not awaits_result(arg(1)) then return {'none'} end
local out = requeue(arg(1), arg(2), arg(3), arg(4))
if out then return {'exhausted', out} end
return {'queued'}
