-- unserved_since(requirement set id, started) -> false | when a worker last could run it
return unserved_since(arg(1), arg(2))
