-- Version 2: a rotated refresh token keeps its successor, encrypted with a key derived from the
-- rotated token itself, for the reuse grace window only (a retry inside the window gets the
-- same successor instead of forking the family; RFC 9700 §4.14.2).
ALTER TABLE refresh_tokens ADD COLUMN successor_enc TEXT;
