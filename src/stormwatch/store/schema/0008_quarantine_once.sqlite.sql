-- quarantine: a file-level record (no line) is kept once, like a line's
-- The unique index compared line, which is NULL for a file-level record (a damaged gzip stream, a file that
-- cannot be read), and NULLs never match: such a record was added again on every run. Keep the first of each.
DELETE FROM quarantine WHERE line IS NULL AND id NOT IN (
    SELECT MIN(id) FROM quarantine WHERE line IS NULL GROUP BY kind, source, raw_sha256
);
DROP INDEX quarantine_once;
CREATE UNIQUE INDEX quarantine_once ON quarantine (kind, source, COALESCE(line, -1), raw_sha256);
