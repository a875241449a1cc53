-- Backend.AI alembic revision 015d84d5a5ef (add_image_table). The tables start empty here; the
-- next step of the 22.03 module copies etcd's image metadata into them.
-- verify: SELECT to_regclass('public.images') IS NOT NULL AND to_regclass('public.image_aliases') IS NOT NULL
CREATE TYPE image_type AS ENUM ('COMPUTE', 'SYSTEM', 'SERVICE');
CREATE TABLE images (
  id uuid DEFAULT uuid_generate_v4() NOT NULL,
  name character varying NOT NULL,
  image character varying NOT NULL,
  created_at timestamp with time zone DEFAULT now(),
  tag character varying NOT NULL,
  registry character varying NOT NULL,
  architecture character varying DEFAULT 'x86_64'::character varying NOT NULL,
  config_digest character(72) NOT NULL,
  size_bytes bigint NOT NULL,
  type image_type NOT NULL,
  accelerators character varying,
  labels jsonb NOT NULL,
  resources jsonb NOT NULL,
  CONSTRAINT pk_images PRIMARY KEY (id)
);
CREATE INDEX ix_image_image_tag_registry ON images USING btree (image, tag, registry);
CREATE UNIQUE INDEX ix_image_name_architecture ON images USING btree (name, architecture);
CREATE INDEX ix_images_architecture ON images USING btree (architecture);
CREATE INDEX ix_images_created_at ON images USING btree (created_at);
CREATE INDEX ix_images_image ON images USING btree (image);
CREATE INDEX ix_images_name ON images USING btree (name);
CREATE INDEX ix_images_registry ON images USING btree (registry);
CREATE INDEX ix_images_tag ON images USING btree (tag);
CREATE TABLE image_aliases (
  id uuid DEFAULT uuid_generate_v4() NOT NULL,
  alias character varying,
  image uuid NOT NULL,
  CONSTRAINT pk_image_aliases PRIMARY KEY (id),
  CONSTRAINT fk_image_aliases_image_images FOREIGN KEY (image) REFERENCES images(id)
);
CREATE UNIQUE INDEX ix_image_alias_unique_ref ON image_aliases USING btree (image, alias);
CREATE UNIQUE INDEX ix_image_aliases_alias ON image_aliases USING btree (alias);
