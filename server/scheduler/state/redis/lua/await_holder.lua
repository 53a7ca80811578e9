-- await_holder(execution id, holder, now, extra) (locality, the holder wait): Python found
-- the queued execution theirs to the bots that could take it; it waits for holder from now
-- (lua/locality.lua locality.await_holder), unless it waits for it already or is taken;
-- extra: the progress it waits for beyond the holder's slots (locality.holder_wait_mark).
locality.await_holder(arg(1), arg(2), arg(3), arg(4))
return 1
