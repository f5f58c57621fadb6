-- A counter that changes with every write to `clients`, in the writing transaction (triggers,
-- so no writer can forget it): a cache of client records in any process or replica sees a
-- change by reading this one row (`Store::clients_version`).
CREATE TABLE store_versions (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_versions (name, version) VALUES ('clients', 0);
CREATE TRIGGER clients_version_insert AFTER INSERT ON clients BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'clients';
END;
CREATE TRIGGER clients_version_update AFTER UPDATE ON clients BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'clients';
END;
CREATE TRIGGER clients_version_delete AFTER DELETE ON clients BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'clients';
END;
