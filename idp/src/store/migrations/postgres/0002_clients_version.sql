-- A counter that changes with every write to `clients`, in the writing transaction (a trigger,
-- so no writer can forget it): a cache of client records in any replica sees a change by reading
-- this one row (`Store::clients_version`), as SQLite's migration 7 does.
CREATE TABLE store_versions (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO store_versions (name, version) VALUES ('clients', 0);
CREATE FUNCTION bump_clients_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'clients';
    RETURN NULL;
END;
$$;
CREATE TRIGGER clients_version AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION bump_clients_version();
