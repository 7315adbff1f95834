-- A site's lifecycle state; existing rows become 'active'.
ALTER TABLE sites ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
CREATE INDEX sites_status ON sites (status);
