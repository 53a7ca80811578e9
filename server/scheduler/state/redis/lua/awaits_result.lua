-- awaits_result(execution id) -> 1 | 0
if awaits_result(arg(1)) then return 1 end
return 0
