-- retry_execution(execution id, note, retry budget, now) -> {'none'} (it awaits no result)
-- | {'lost', lost}
if not awaits_result(arg(1)) then return {'none'} end
return {'lost', requeue(arg(1), arg(2), arg(3), arg(4))}
