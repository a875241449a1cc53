-- Backend.AI's own pg_dump --schema-only at alembic head 8679d0a7e22b (21.03.3+ / 21.09.0-21.09.2), copied unchanged from shared/reference/schema-dumps/21.03-8679d0a7e22b.sql
--
-- PostgreSQL database dump
--




--
-- Name: uuid-ossp; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public;


--
-- Name: EXTENSION "uuid-ossp"; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION "uuid-ossp" IS 'generate universally unique identifiers (UUIDs)';


--
-- Name: agentstatus; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.agentstatus AS ENUM (
    'ALIVE',
    'LOST',
    'RESTARTING',
    'TERMINATED'
);


--
-- Name: defaultforunspecified; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.defaultforunspecified AS ENUM (
    'LIMITED',
    'UNLIMITED'
);


--
-- Name: errorlog_severity; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.errorlog_severity AS ENUM (
    'critical',
    'error',
    'warning'
);


--
-- Name: kernelstatus; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.kernelstatus AS ENUM (
    'PENDING',
    'SCHEDULED',
    'PREPARING',
    'BUILDING',
    'PULLING',
    'RUNNING',
    'RESTARTING',
    'RESIZING',
    'SUSPENDED',
    'TERMINATING',
    'TERMINATED',
    'ERROR',
    'CANCELLED'
);


--
-- Name: sessionresult; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.sessionresult AS ENUM (
    'UNDEFINED',
    'SUCCESS',
    'FAILURE'
);


--
-- Name: sessiontypes; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.sessiontypes AS ENUM (
    'INTERACTIVE',
    'BATCH'
);


--
-- Name: templatetype; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.templatetype AS ENUM (
    'TASK',
    'CLUSTER'
);


--
-- Name: userrole; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.userrole AS ENUM (
    'superadmin',
    'admin',
    'user',
    'monitor'
);


--
-- Name: userstatus; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.userstatus AS ENUM (
    'active',
    'inactive',
    'deleted',
    'before-verification'
);


--
-- Name: vfolderinvitationstate; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.vfolderinvitationstate AS ENUM (
    'pending',
    'canceled',
    'accepted',
    'rejected'
);


--
-- Name: vfolderownershiptype; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.vfolderownershiptype AS ENUM (
    'user',
    'group'
);


--
-- Name: vfolderpermission; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.vfolderpermission AS ENUM (
    'ro',
    'rw',
    'wd'
);


--
-- Name: vfolderusagemode; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.vfolderusagemode AS ENUM (
    'general',
    'model',
    'data'
);




--
-- Name: agents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.agents (
    id character varying(64) NOT NULL,
    status public.agentstatus NOT NULL,
    status_changed timestamp with time zone,
    region character varying(64) NOT NULL,
    scaling_group character varying(64) DEFAULT 'default'::character varying NOT NULL,
    schedulable boolean DEFAULT true NOT NULL,
    available_slots jsonb NOT NULL,
    occupied_slots jsonb NOT NULL,
    addr character varying(128) NOT NULL,
    first_contact timestamp with time zone DEFAULT now(),
    lost_at timestamp with time zone,
    version character varying(64) NOT NULL,
    compute_plugins jsonb NOT NULL
);


--
-- Name: alembic_version; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alembic_version (
    version_num character varying(32) NOT NULL
);


--
-- Name: association_groups_users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.association_groups_users (
    user_id uuid NOT NULL,
    group_id uuid NOT NULL
);


--
-- Name: domains; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.domains (
    name character varying(64) NOT NULL,
    description character varying(512),
    is_active boolean,
    created_at timestamp with time zone DEFAULT now(),
    modified_at timestamp with time zone DEFAULT now(),
    total_resource_slots jsonb,
    allowed_vfolder_hosts character varying[] NOT NULL,
    allowed_docker_registries character varying[] NOT NULL,
    integration_id character varying(512),
    dotfiles bytea NOT NULL
);


--
-- Name: error_logs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.error_logs (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    created_at timestamp with time zone DEFAULT now(),
    severity public.errorlog_severity,
    source character varying,
    "user" uuid,
    is_read boolean,
    is_cleared boolean,
    message text,
    context_lang character varying,
    context_env jsonb,
    request_url character varying,
    request_status integer,
    traceback text
);


--
-- Name: groups; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.groups (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    name character varying(64) NOT NULL,
    description character varying(512),
    is_active boolean,
    created_at timestamp with time zone DEFAULT now(),
    modified_at timestamp with time zone DEFAULT now(),
    integration_id character varying(512),
    domain_name character varying(64) NOT NULL,
    total_resource_slots jsonb,
    allowed_vfolder_hosts character varying[] NOT NULL,
    dotfiles bytea NOT NULL
);


--
-- Name: kernels; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.kernels (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    session_id uuid NOT NULL,
    session_creation_id character varying(32),
    session_name character varying(64),
    session_type public.sessiontypes DEFAULT 'INTERACTIVE'::public.sessiontypes NOT NULL,
    cluster_mode character varying(16) DEFAULT 'SINGLE_NODE'::character varying NOT NULL,
    cluster_size integer NOT NULL,
    cluster_role character varying(16) NOT NULL,
    cluster_idx integer NOT NULL,
    cluster_hostname character varying(64) NOT NULL,
    scaling_group character varying(64),
    agent character varying(64),
    agent_addr character varying(128),
    domain_name character varying(64) NOT NULL,
    group_id uuid NOT NULL,
    user_uuid uuid NOT NULL,
    access_key character varying(20),
    image character varying(512),
    registry character varying(512),
    tag character varying(64),
    container_id character varying(64),
    occupied_slots jsonb NOT NULL,
    occupied_shares jsonb NOT NULL,
    environ character varying[],
    mounts character varying[],
    mount_map jsonb,
    attached_devices jsonb,
    resource_opts jsonb,
    bootstrap_script character varying(16384),
    kernel_host character varying(128),
    repl_in_port integer NOT NULL,
    repl_out_port integer NOT NULL,
    stdin_port integer NOT NULL,
    stdout_port integer NOT NULL,
    service_ports jsonb,
    preopen_ports integer[],
    created_at timestamp with time zone DEFAULT now(),
    terminated_at timestamp with time zone,
    starts_at timestamp with time zone,
    status public.kernelstatus DEFAULT 'PENDING'::public.kernelstatus NOT NULL,
    status_changed timestamp with time zone,
    status_info character varying,
    status_data jsonb,
    startup_command text,
    result public.sessionresult DEFAULT 'UNDEFINED'::public.sessionresult NOT NULL,
    internal_data jsonb,
    container_log bytea,
    num_queries bigint,
    last_stat jsonb
);


--
-- Name: keypair_resource_policies; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.keypair_resource_policies (
    name character varying(256) NOT NULL,
    created_at timestamp with time zone DEFAULT now(),
    default_for_unspecified public.defaultforunspecified NOT NULL,
    total_resource_slots jsonb NOT NULL,
    max_concurrent_sessions integer NOT NULL,
    max_containers_per_session integer NOT NULL,
    max_vfolder_count integer NOT NULL,
    max_vfolder_size bigint NOT NULL,
    idle_timeout bigint NOT NULL,
    allowed_vfolder_hosts character varying[] NOT NULL
);


--
-- Name: keypairs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.keypairs (
    user_id character varying(256),
    access_key character varying(20) NOT NULL,
    secret_key character varying(40),
    is_active boolean,
    is_admin boolean DEFAULT false,
    created_at timestamp with time zone DEFAULT now(),
    modified_at timestamp with time zone DEFAULT now(),
    last_used timestamp with time zone,
    concurrency_used integer,
    rate_limit integer,
    num_queries integer DEFAULT 0,
    ssh_public_key character varying(750),
    ssh_private_key character varying(2000),
    "user" uuid NOT NULL,
    resource_policy character varying(256) NOT NULL,
    dotfiles bytea NOT NULL,
    bootstrap_script character varying(65536) NOT NULL
);


--
-- Name: resource_presets; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.resource_presets (
    name character varying(256) NOT NULL,
    resource_slots jsonb NOT NULL,
    shared_memory bigint
);


--
-- Name: scaling_groups; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.scaling_groups (
    name character varying(64) NOT NULL,
    description character varying(512),
    is_active boolean,
    created_at timestamp with time zone DEFAULT now(),
    driver character varying(64) NOT NULL,
    driver_opts jsonb NOT NULL,
    scheduler character varying(64) NOT NULL,
    scheduler_opts jsonb NOT NULL
);


--
-- Name: session_dependencies; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.session_dependencies (
    session_id uuid NOT NULL,
    depends_on uuid NOT NULL
);


--
-- Name: session_templates; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.session_templates (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    created_at timestamp with time zone,
    is_active boolean,
    domain_name character varying(64) NOT NULL,
    group_id uuid,
    user_uuid uuid NOT NULL,
    type public.templatetype DEFAULT 'TASK'::public.templatetype NOT NULL,
    name character varying(128),
    template jsonb NOT NULL
);


--
-- Name: sgroups_for_domains; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sgroups_for_domains (
    scaling_group character varying(64) NOT NULL,
    domain character varying(64) NOT NULL
);


--
-- Name: sgroups_for_groups; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sgroups_for_groups (
    scaling_group character varying(64) NOT NULL,
    "group" uuid NOT NULL
);


--
-- Name: sgroups_for_keypairs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sgroups_for_keypairs (
    scaling_group character varying(64) NOT NULL,
    access_key character varying(20) NOT NULL
);


--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    uuid uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    username character varying(64),
    email character varying(64) NOT NULL,
    password character varying,
    need_password_change boolean,
    full_name character varying(64),
    description character varying(500),
    status public.userstatus NOT NULL,
    status_info character varying,
    created_at timestamp with time zone DEFAULT now(),
    modified_at timestamp with time zone DEFAULT now(),
    integration_id character varying(512),
    domain_name character varying(64),
    role public.userrole
);


--
-- Name: vfolder_attachment; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vfolder_attachment (
    vfolder uuid NOT NULL,
    kernel uuid NOT NULL
);


--
-- Name: vfolder_invitations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vfolder_invitations (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    permission public.vfolderpermission,
    inviter character varying(256),
    invitee character varying(256) NOT NULL,
    state public.vfolderinvitationstate,
    created_at timestamp with time zone DEFAULT now(),
    modified_at timestamp with time zone,
    vfolder uuid NOT NULL
);


--
-- Name: vfolder_permissions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vfolder_permissions (
    permission public.vfolderpermission,
    vfolder uuid NOT NULL,
    "user" uuid NOT NULL
);


--
-- Name: vfolders; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vfolders (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    host character varying(128) NOT NULL,
    name character varying(64) NOT NULL,
    usage_mode public.vfolderusagemode NOT NULL,
    permission public.vfolderpermission,
    max_files integer,
    max_size integer,
    num_files integer,
    cur_size integer,
    created_at timestamp with time zone DEFAULT now(),
    last_used timestamp with time zone,
    creator character varying(128),
    unmanaged_path character varying(512),
    ownership_type public.vfolderownershiptype NOT NULL,
    "user" uuid,
    "group" uuid,
    cloneable boolean NOT NULL,
    CONSTRAINT ck_vfolders_either_one_of_user_or_group CHECK (((("user" IS NULL) AND ("group" IS NOT NULL)) OR (("user" IS NOT NULL) AND ("group" IS NULL)))),
    CONSTRAINT ck_vfolders_ownership_type_match_with_user_or_group CHECK ((((ownership_type = 'user'::public.vfolderownershiptype) AND ("user" IS NOT NULL)) OR ((ownership_type = 'group'::public.vfolderownershiptype) AND ("group" IS NOT NULL))))
);


--
-- Name: alembic_version alembic_version_pkc; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alembic_version
    ADD CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num);


--
-- Name: agents pk_agents; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.agents
    ADD CONSTRAINT pk_agents PRIMARY KEY (id);


--
-- Name: domains pk_domains; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.domains
    ADD CONSTRAINT pk_domains PRIMARY KEY (name);


--
-- Name: error_logs pk_error_logs; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.error_logs
    ADD CONSTRAINT pk_error_logs PRIMARY KEY (id);


--
-- Name: groups pk_groups; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.groups
    ADD CONSTRAINT pk_groups PRIMARY KEY (id);


--
-- Name: kernels pk_kernels; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT pk_kernels PRIMARY KEY (id);


--
-- Name: keypair_resource_policies pk_keypair_resource_policies; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keypair_resource_policies
    ADD CONSTRAINT pk_keypair_resource_policies PRIMARY KEY (name);


--
-- Name: keypairs pk_keypairs; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keypairs
    ADD CONSTRAINT pk_keypairs PRIMARY KEY (access_key);


--
-- Name: resource_presets pk_resource_presets; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.resource_presets
    ADD CONSTRAINT pk_resource_presets PRIMARY KEY (name);


--
-- Name: scaling_groups pk_scaling_groups; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.scaling_groups
    ADD CONSTRAINT pk_scaling_groups PRIMARY KEY (name);


--
-- Name: session_dependencies pk_session_dependencies; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_dependencies
    ADD CONSTRAINT pk_session_dependencies PRIMARY KEY (session_id, depends_on);


--
-- Name: session_templates pk_session_templates; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_templates
    ADD CONSTRAINT pk_session_templates PRIMARY KEY (id);


--
-- Name: users pk_users; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT pk_users PRIMARY KEY (uuid);


--
-- Name: vfolder_attachment pk_vfolder_attachment; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_attachment
    ADD CONSTRAINT pk_vfolder_attachment PRIMARY KEY (vfolder, kernel);


--
-- Name: vfolder_invitations pk_vfolder_invitations; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_invitations
    ADD CONSTRAINT pk_vfolder_invitations PRIMARY KEY (id);


--
-- Name: vfolders pk_vfolders; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolders
    ADD CONSTRAINT pk_vfolders PRIMARY KEY (id);


--
-- Name: association_groups_users uq_association_user_id_group_id; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.association_groups_users
    ADD CONSTRAINT uq_association_user_id_group_id UNIQUE (user_id, group_id);


--
-- Name: groups uq_groups_name_domain_name; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.groups
    ADD CONSTRAINT uq_groups_name_domain_name UNIQUE (name, domain_name);


--
-- Name: sgroups_for_keypairs uq_sgroup_akey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_keypairs
    ADD CONSTRAINT uq_sgroup_akey UNIQUE (scaling_group, access_key);


--
-- Name: sgroups_for_domains uq_sgroup_domain; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_domains
    ADD CONSTRAINT uq_sgroup_domain UNIQUE (scaling_group, domain);


--
-- Name: sgroups_for_groups uq_sgroup_ugroup; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_groups
    ADD CONSTRAINT uq_sgroup_ugroup UNIQUE (scaling_group, "group");


--
-- Name: users uq_users_username; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT uq_users_username UNIQUE (username);


--
-- Name: ix_agents_region; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_agents_region ON public.agents USING btree (region);


--
-- Name: ix_agents_scaling_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_agents_scaling_group ON public.agents USING btree (scaling_group);


--
-- Name: ix_agents_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_agents_status ON public.agents USING btree (status);


--
-- Name: ix_error_logs_created_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_error_logs_created_at ON public.error_logs USING btree (created_at);


--
-- Name: ix_error_logs_is_cleared; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_error_logs_is_cleared ON public.error_logs USING btree (is_cleared);


--
-- Name: ix_error_logs_is_read; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_error_logs_is_read ON public.error_logs USING btree (is_read);


--
-- Name: ix_error_logs_severity; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_error_logs_severity ON public.error_logs USING btree (severity);


--
-- Name: ix_error_logs_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_error_logs_user ON public.error_logs USING btree ("user");


--
-- Name: ix_groups_domain_name; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_groups_domain_name ON public.groups USING btree (domain_name);


--
-- Name: ix_kernels_cluster_role; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_cluster_role ON public.kernels USING btree (cluster_role);


--
-- Name: ix_kernels_created_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_created_at ON public.kernels USING btree (created_at);


--
-- Name: ix_kernels_result; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_result ON public.kernels USING btree (result);


--
-- Name: ix_kernels_scaling_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_scaling_group ON public.kernels USING btree (scaling_group);


--
-- Name: ix_kernels_sess_id_role; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_sess_id_role ON public.kernels USING btree (session_id, cluster_role);


--
-- Name: ix_kernels_session_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_session_id ON public.kernels USING btree (session_id);


--
-- Name: ix_kernels_session_name; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_session_name ON public.kernels USING btree (session_name);


--
-- Name: ix_kernels_session_type; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_session_type ON public.kernels USING btree (session_type);


--
-- Name: ix_kernels_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_status ON public.kernels USING btree (status);


--
-- Name: ix_kernels_status_changed; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_status_changed ON public.kernels USING btree (status_changed);


--
-- Name: ix_kernels_status_role; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_status_role ON public.kernels USING btree (status, cluster_role);


--
-- Name: ix_kernels_terminated_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_terminated_at ON public.kernels USING btree (terminated_at);


--
-- Name: ix_kernels_unique_sess_token; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON public.kernels USING btree (access_key, session_name) WHERE ((status <> ALL (ARRAY['TERMINATED'::public.kernelstatus, 'CANCELLED'::public.kernelstatus])) AND ((cluster_role)::text = 'main'::text));


--
-- Name: ix_kernels_updated_order; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_kernels_updated_order ON public.kernels USING btree (GREATEST('created_at'::text, 'terminated_at'::text, 'status_changed'::text));


--
-- Name: ix_keypairs_is_active; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_keypairs_is_active ON public.keypairs USING btree (is_active);


--
-- Name: ix_keypairs_is_admin; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_keypairs_is_admin ON public.keypairs USING btree (is_admin);


--
-- Name: ix_keypairs_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_keypairs_user_id ON public.keypairs USING btree (user_id);


--
-- Name: ix_scaling_groups_is_active; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_scaling_groups_is_active ON public.scaling_groups USING btree (is_active);


--
-- Name: ix_session_dependencies_depends_on; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_session_dependencies_depends_on ON public.session_dependencies USING btree (depends_on);


--
-- Name: ix_session_dependencies_session_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_session_dependencies_session_id ON public.session_dependencies USING btree (session_id);


--
-- Name: ix_session_templates_created_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_session_templates_created_at ON public.session_templates USING btree (created_at);


--
-- Name: ix_session_templates_type; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_session_templates_type ON public.session_templates USING btree (type);


--
-- Name: ix_session_templates_user_uuid; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_session_templates_user_uuid ON public.session_templates USING btree (user_uuid);


--
-- Name: ix_sgroups_for_domains_domain; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sgroups_for_domains_domain ON public.sgroups_for_domains USING btree (domain);


--
-- Name: ix_sgroups_for_domains_scaling_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sgroups_for_domains_scaling_group ON public.sgroups_for_domains USING btree (scaling_group);


--
-- Name: ix_sgroups_for_groups_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sgroups_for_groups_group ON public.sgroups_for_groups USING btree ("group");


--
-- Name: ix_sgroups_for_groups_scaling_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sgroups_for_groups_scaling_group ON public.sgroups_for_groups USING btree (scaling_group);


--
-- Name: ix_sgroups_for_keypairs_access_key; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sgroups_for_keypairs_access_key ON public.sgroups_for_keypairs USING btree (access_key);


--
-- Name: ix_sgroups_for_keypairs_scaling_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sgroups_for_keypairs_scaling_group ON public.sgroups_for_keypairs USING btree (scaling_group);


--
-- Name: ix_users_domain_name; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_users_domain_name ON public.users USING btree (domain_name);


--
-- Name: ix_users_email; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX ix_users_email ON public.users USING btree (email);


--
-- Name: ix_vfolders_name; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_vfolders_name ON public.vfolders USING btree (name);


--
-- Name: agents fk_agents_scaling_group_scaling_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.agents
    ADD CONSTRAINT fk_agents_scaling_group_scaling_groups FOREIGN KEY (scaling_group) REFERENCES public.scaling_groups(name);


--
-- Name: association_groups_users fk_association_groups_users_group_id_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.association_groups_users
    ADD CONSTRAINT fk_association_groups_users_group_id_groups FOREIGN KEY (group_id) REFERENCES public.groups(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: association_groups_users fk_association_groups_users_user_id_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.association_groups_users
    ADD CONSTRAINT fk_association_groups_users_user_id_users FOREIGN KEY (user_id) REFERENCES public.users(uuid) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: error_logs fk_error_logs_user_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.error_logs
    ADD CONSTRAINT fk_error_logs_user_users FOREIGN KEY ("user") REFERENCES public.users(uuid);


--
-- Name: groups fk_groups_domain_name_domains; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.groups
    ADD CONSTRAINT fk_groups_domain_name_domains FOREIGN KEY (domain_name) REFERENCES public.domains(name) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: kernels fk_kernels_access_key_keypairs; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT fk_kernels_access_key_keypairs FOREIGN KEY (access_key) REFERENCES public.keypairs(access_key);


--
-- Name: kernels fk_kernels_agent_agents; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT fk_kernels_agent_agents FOREIGN KEY (agent) REFERENCES public.agents(id);


--
-- Name: kernels fk_kernels_domain_name_domains; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT fk_kernels_domain_name_domains FOREIGN KEY (domain_name) REFERENCES public.domains(name);


--
-- Name: kernels fk_kernels_group_id_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT fk_kernels_group_id_groups FOREIGN KEY (group_id) REFERENCES public.groups(id);


--
-- Name: kernels fk_kernels_scaling_group_scaling_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT fk_kernels_scaling_group_scaling_groups FOREIGN KEY (scaling_group) REFERENCES public.scaling_groups(name);


--
-- Name: kernels fk_kernels_user_uuid_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.kernels
    ADD CONSTRAINT fk_kernels_user_uuid_users FOREIGN KEY (user_uuid) REFERENCES public.users(uuid);


--
-- Name: keypairs fk_keypairs_resource_policy_keypair_resource_policies; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keypairs
    ADD CONSTRAINT fk_keypairs_resource_policy_keypair_resource_policies FOREIGN KEY (resource_policy) REFERENCES public.keypair_resource_policies(name);


--
-- Name: keypairs fk_keypairs_user_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keypairs
    ADD CONSTRAINT fk_keypairs_user_users FOREIGN KEY ("user") REFERENCES public.users(uuid);


--
-- Name: session_dependencies fk_session_dependencies_depends_on_kernels; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_dependencies
    ADD CONSTRAINT fk_session_dependencies_depends_on_kernels FOREIGN KEY (depends_on) REFERENCES public.kernels(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: session_dependencies fk_session_dependencies_session_id_kernels; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_dependencies
    ADD CONSTRAINT fk_session_dependencies_session_id_kernels FOREIGN KEY (session_id) REFERENCES public.kernels(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: session_templates fk_session_templates_domain_name_domains; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_templates
    ADD CONSTRAINT fk_session_templates_domain_name_domains FOREIGN KEY (domain_name) REFERENCES public.domains(name);


--
-- Name: session_templates fk_session_templates_group_id_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_templates
    ADD CONSTRAINT fk_session_templates_group_id_groups FOREIGN KEY (group_id) REFERENCES public.groups(id);


--
-- Name: session_templates fk_session_templates_user_uuid_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_templates
    ADD CONSTRAINT fk_session_templates_user_uuid_users FOREIGN KEY (user_uuid) REFERENCES public.users(uuid);


--
-- Name: sgroups_for_domains fk_sgroups_for_domains_domain_domains; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_domains
    ADD CONSTRAINT fk_sgroups_for_domains_domain_domains FOREIGN KEY (domain) REFERENCES public.domains(name) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: sgroups_for_domains fk_sgroups_for_domains_scaling_group_scaling_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_domains
    ADD CONSTRAINT fk_sgroups_for_domains_scaling_group_scaling_groups FOREIGN KEY (scaling_group) REFERENCES public.scaling_groups(name) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: sgroups_for_groups fk_sgroups_for_groups_group_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_groups
    ADD CONSTRAINT fk_sgroups_for_groups_group_groups FOREIGN KEY ("group") REFERENCES public.groups(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: sgroups_for_groups fk_sgroups_for_groups_scaling_group_scaling_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_groups
    ADD CONSTRAINT fk_sgroups_for_groups_scaling_group_scaling_groups FOREIGN KEY (scaling_group) REFERENCES public.scaling_groups(name) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: sgroups_for_keypairs fk_sgroups_for_keypairs_access_key_keypairs; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_keypairs
    ADD CONSTRAINT fk_sgroups_for_keypairs_access_key_keypairs FOREIGN KEY (access_key) REFERENCES public.keypairs(access_key) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: sgroups_for_keypairs fk_sgroups_for_keypairs_scaling_group_scaling_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sgroups_for_keypairs
    ADD CONSTRAINT fk_sgroups_for_keypairs_scaling_group_scaling_groups FOREIGN KEY (scaling_group) REFERENCES public.scaling_groups(name) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: users fk_users_domain_name_domains; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT fk_users_domain_name_domains FOREIGN KEY (domain_name) REFERENCES public.domains(name);


--
-- Name: vfolder_attachment fk_vfolder_attachment_kernel_kernels; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_attachment
    ADD CONSTRAINT fk_vfolder_attachment_kernel_kernels FOREIGN KEY (kernel) REFERENCES public.kernels(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: vfolder_attachment fk_vfolder_attachment_vfolder_vfolders; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_attachment
    ADD CONSTRAINT fk_vfolder_attachment_vfolder_vfolders FOREIGN KEY (vfolder) REFERENCES public.vfolders(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: vfolder_invitations fk_vfolder_invitations_vfolder_vfolders; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_invitations
    ADD CONSTRAINT fk_vfolder_invitations_vfolder_vfolders FOREIGN KEY (vfolder) REFERENCES public.vfolders(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: vfolder_permissions fk_vfolder_permissions_user_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_permissions
    ADD CONSTRAINT fk_vfolder_permissions_user_users FOREIGN KEY ("user") REFERENCES public.users(uuid);


--
-- Name: vfolder_permissions fk_vfolder_permissions_vfolder_vfolders; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolder_permissions
    ADD CONSTRAINT fk_vfolder_permissions_vfolder_vfolders FOREIGN KEY (vfolder) REFERENCES public.vfolders(id) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: vfolders fk_vfolders_group_groups; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolders
    ADD CONSTRAINT fk_vfolders_group_groups FOREIGN KEY ("group") REFERENCES public.groups(id);


--
-- Name: vfolders fk_vfolders_user_users; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vfolders
    ADD CONSTRAINT fk_vfolders_user_users FOREIGN KEY ("user") REFERENCES public.users(uuid);


--
-- PostgreSQL database dump complete
--



-- the revision this schema is at
INSERT INTO public.alembic_version (version_num) VALUES ('8679d0a7e22b');
