-- finish_execution(execution id, response, now) -> 1 finished | 0 (it awaits no result)
if not awaits_result(arg(1)) then return 0 end
finish(arg(1), arg(2), arg(3))
return 1
