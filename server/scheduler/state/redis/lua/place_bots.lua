-- place_bots(execution id, now) -> false | {sketch, {bot, ...}} (locality: lua/locality.lua)
-- The bots a queued execution may go to now, for Python to choose among; false if it
-- is not queued, or no bot could take it, or only one (it was given to that one).
return locality.bots(arg(1), arg(2))
