-- claim_window(name, now) -> false (closed) | {'done', session_view, its answer or false} |
-- {'choose', summary version, free slots, window, others, passed by}: locality.claim_window
-- (lua/locality.lua). A bot's call reads it in its report instead (report.lua), one
-- script fewer per call; this one serves the claims that follow no report.
return locality.claim_window(arg(1), arg(2), true)
