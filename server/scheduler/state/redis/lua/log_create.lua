-- log_create(parent, now) -> {name, write name}: a stream for a LogStream.CreateLogStream caller
local name, write = create_log(arg(1), arg(2))
return {name, write}
