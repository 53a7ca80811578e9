-- answer(name) -> false | {registration, {{lease id, cancelled, instance, hash, size, function,
-- action, stdout write name, stderr write name}, ...}}; cancellations are now told (answer_of)
return answer_of(arg(1))
