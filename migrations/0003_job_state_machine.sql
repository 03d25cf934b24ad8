-- The job state machine, enforced by the database as well as by the code. This table must
-- equal TRANSITIONS in domain/states.py; a test compares the two pair by pair.

CREATE FUNCTION job_transition_allowed(from_state text, to_state text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS $$
    SELECT (from_state, to_state) IN (
        ('PENDING', 'RUNNING'),
        ('PENDING', 'DLQ'),
        ('PENDING', 'CANCELLED'),
        ('RUNNING', 'PENDING'),
        ('RUNNING', 'SUCCEEDED'),
        ('RUNNING', 'FAILED'),
        ('RUNNING', 'DLQ'),
        ('RUNNING', 'CANCELLED'),
        ('FAILED', 'PENDING'),
        ('FAILED', 'DLQ'),
        ('FAILED', 'CANCELLED'),
        ('DLQ', 'PENDING'),
        ('CANCELLED', 'PENDING')
    )
$$;

-- Raised with SQLSTATE TF001 (class TF: TaskForge), so clients can tell a refused move
-- from any other error.
CREATE FUNCTION jobs_enforce_transition()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT job_transition_allowed(OLD.state, NEW.state) THEN
        RAISE EXCEPTION 'invalid state transition for job %: % -> %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'TF001',
                  HINT = 'Allowed moves are listed in job_transition_allowed().';
    END IF;
    RETURN NEW;
END
$$;

-- Fires whenever an UPDATE writes the state column. Writing the state a job already has
-- is not a move the table allows either, so no statement may "touch" state in passing.
CREATE TRIGGER jobs_state_transition
    BEFORE UPDATE OF state ON jobs
    FOR EACH ROW
    EXECUTE FUNCTION jobs_enforce_transition();
