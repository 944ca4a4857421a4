-- The Flask peer's tables (bench/flask_form.py), made by `flask --app bench.flask_form init-db` as
-- the Flask tutorial makes its own: the same tables and indexes as store.py's SQLite schema.
PRAGMA journal_mode = WAL;  -- once: the file keeps it, as store.py's does

DROP TABLE IF EXISTS submission_hobby;
DROP TABLE IF EXISTS submission;

CREATE TABLE submission (
  id INTEGER PRIMARY KEY,
  token TEXT NOT NULL UNIQUE,
  received TEXT NOT NULL,
  age INTEGER
);
CREATE INDEX submission_received ON submission (received);

CREATE TABLE submission_hobby (
  submission_id BIGINT NOT NULL REFERENCES submission (id),
  hobby TEXT NOT NULL,
  PRIMARY KEY (submission_id, hobby)
);
