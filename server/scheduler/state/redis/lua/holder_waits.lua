-- holder_waits(now, limit) -> {{execution id, ...}, next deadline | false} (locality, the
-- holder wait): the waits whose deadline (locality_holder_wait_max) passed are over;
-- those still queued are returned for Python to place (place_bots, then place). Any
-- replica's tick runs it, so a wait ends at its deadline whichever replica started it.
return locality.waits_past(arg(1), tonumber(arg(2)))
