-- session(name) -> session_view | false
return session_view(arg(1))
