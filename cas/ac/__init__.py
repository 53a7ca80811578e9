"""The action cache's logic: completeness checks, inlining, validation of ActionResults."""
