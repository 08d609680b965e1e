//! One throwaway PostgreSQL server per test process.
//!
//! Started on first use of [`Postgres::get`] (blocking; works from sync and async tests),
//! listening on 127.0.0.1 on a free port with TLS on (certificate from a harness CA; see
//! [`Postgres::ca_path`]) and on a Unix socket in its directory where `postgres` logs in
//! with `trust` for administration. TCP logins check passwords: scram-sha-256 by default,
//! md5 or cleartext `password` for roles made with those methods (see [`AuthMethod`]).
//! The statics are never dropped, so the watchdog started by [`super::run_root`] stops the
//! server (`pg_ctl stop -m immediate`) and deletes its files when the test process exits.

use super::tls::{TestPki, generate_pki, verifying_connector};
use super::{
    clear_libpq_env, conninfo_quote, describe, free_port, random_string, run_root,
    run_with_timeout, set_mode, unique_suffix, write_file,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// How a role proves its password to PostgreSQL over TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (the default for every role).
    ScramSha256,
    /// MD5 challenge; the role's password is stored as an md5 hash.
    Md5,
    /// Cleartext password (`password` in pg_hba.conf).
    Password,
}

impl AuthMethod {
    /// The pg_hba.conf method name.
    pub fn hba_name(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Password => "password",
        }
    }

    /// The group role whose members pg_hba.conf sends to this method.
    fn group(self) -> Option<&'static str> {
        match self {
            AuthMethod::ScramSha256 => None,
            AuthMethod::Md5 => Some(MD5_GROUP),
            AuthMethod::Password => Some(PASSWORD_GROUP),
        }
    }
}

const MD5_GROUP: &str = "harness_md5_login";
const PASSWORD_GROUP: &str = "harness_password_login";

/// A database with an owner role that can log in over TCP: what a ward target points at.
#[derive(Clone, Debug)]
pub struct PgTarget {
    pub database: String,
    pub user: String,
    pub password: String,
    pub method: AuthMethod,
    /// `127.0.0.1:<port>` of the harness server.
    pub address: String,
}

/// The throwaway server. Get it with [`Postgres::get`].
pub struct Postgres {
    dir: PathBuf,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    ca_path: PathBuf,
    ca_der: Vec<u8>,
    log_path: PathBuf,
}

static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();

impl Postgres {
    /// The server of this test process, started on first call.
    pub fn get() -> &'static Postgres {
        match SERVER.get_or_init(Postgres::start) {
            Ok(pg) => pg,
            Err(e) => panic!("the throwaway PostgreSQL did not start: {e}"),
        }
    }

    /// 127.0.0.1
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TCP port on 127.0.0.1 (also the Unix socket's port number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as written in a ward target.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host(), self.port)
    }

    /// Directory of initdb, pg_ctl, postgres, psql, pgbench.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// PEM file of the CA that signed the server certificate (SAN `localhost`, `127.0.0.1`).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The server's log (stderr of postgres, with `log_connections = on`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's log as text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A `psql` for this PostgreSQL version, with libpq environment variables cleared.
    pub fn psql_command(&self) -> Command {
        psql_command()
    }

    /// Runs SQL as superuser `postgres` over the Unix socket in database `db` (`psql -At`,
    /// stop on the first error) and returns stdout without the trailing newline.
    /// Fails the test with psql's stderr if the SQL fails.
    pub fn admin_sql(&self, db: &str, sql: &str) -> String {
        match self.try_admin_sql(db, sql) {
            Ok(out) => out,
            Err(e) => panic!("admin SQL failed in database {db:?}: {sql}\n{e}"),
        }
    }

    /// Like [`Postgres::admin_sql`] but returns the failure instead of panicking.
    pub fn try_admin_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_command();
        cmd.args(["-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_string())
        } else {
            Err(describe(&out))
        }
    }

    /// Creates a database with a name unique to this process, derived from `name`, and
    /// returns that name.
    pub fn create_database(&self, name: &str) -> String {
        let db = unique_name(name);
        self.admin_sql("postgres", &format!("CREATE DATABASE {}", quote_ident(&db)));
        db
    }

    /// Like [`Postgres::create_database`], with `owner` owning the database and its
    /// `public` schema (so the owner can create tables).
    pub fn create_database_owned_by(&self, name: &str, owner: &str) -> String {
        let db = unique_name(name);
        self.admin_sql(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&db),
                quote_ident(owner)
            ),
        );
        self.admin_sql(
            &db,
            &format!("ALTER SCHEMA public OWNER TO {}", quote_ident(owner)),
        );
        db
    }

    /// Creates a login role with a name unique to this process, derived from `name`, that
    /// logs in over TCP with `method`, and returns its name. For md5 the password is stored
    /// as an md5 hash (`password_encryption = md5`); pg_hba.conf sends members of the
    /// harness's method groups to `md5` or `password` (first match wins), everyone else to
    /// scram-sha-256, so no reload is needed.
    pub fn create_user(&self, name: &str, password: &str, method: AuthMethod) -> String {
        let role = unique_name(name);
        let encryption = match method {
            AuthMethod::Md5 => "md5",
            _ => "scram-sha-256",
        };
        let group = method
            .group()
            .map(|g| format!(" IN ROLE {}", quote_ident(g)))
            .unwrap_or_default();
        self.admin_sql(
            "postgres",
            &format!(
                "SET password_encryption = '{encryption}'; CREATE ROLE {} LOGIN PASSWORD {}{group}",
                quote_ident(&role),
                quote_literal(password)
            ),
        );
        role
    }

    /// A database owned by a fresh role (random password, given method): ready to be a ward
    /// target. `name` is the prefix of both names.
    pub fn create_target(&self, name: &str, method: AuthMethod) -> PgTarget {
        let password = random_string(24);
        let user = self.create_user(&format!("{name}_user"), &password, method);
        let database = self.create_database_owned_by(name, &user);
        PgTarget {
            database,
            user,
            password,
            method,
            address: self.address(),
        }
    }

    /// A libpq conninfo string for a TCP login to this server (`sslmode` as given:
    /// `disable`, `require`, `verify-full` uses the harness CA).
    pub fn conninfo(&self, db: &str, user: &str, password: &str, sslmode: &str) -> String {
        let mut s = format!(
            "host={} port={} dbname={} user={} password={} sslmode={sslmode}",
            self.host(),
            self.port,
            conninfo_quote(db),
            conninfo_quote(user),
            conninfo_quote(password)
        );
        if sslmode.starts_with("verify") {
            s.push_str(&format!(
                " sslrootcert={}",
                conninfo_quote(&self.ca_path.to_string_lossy())
            ));
        }
        s
    }

    /// Runs `psql -X -At -v ON_ERROR_STOP=1 -c SQL` over TCP (direct, not through ward).
    pub fn psql_tcp(&self, conninfo: &str, sql: &str) -> Output {
        let mut cmd = self.psql_command();
        cmd.args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ]);
        run_with_timeout(&mut cmd, Duration::from_secs(60))
    }

    /// A tokio-postgres client straight to this server over TLS verified with the harness
    /// CA. Must be called inside a tokio runtime; the connection task is spawned on it.
    pub async fn client(
        &self,
        db: &str,
        user: &str,
        password: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.host())
            .port(self.port)
            .dbname(db)
            .user(user)
            .password(password)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config
            .connect(verifying_connector(&self.ca_der))
            .await
            .unwrap_or_else(|e| panic!("direct connection to PostgreSQL as {user}: {e}"));
        (client, tokio::spawn(connection))
    }

    fn start() -> Result<Postgres, String> {
        let bin_dir = find_bin_dir()?;
        let dir = run_root().join("pg");
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        set_mode(&dir, 0o700);
        let owner = if super::is_root() {
            Some(postgres_ids()?)
        } else {
            None
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown postgres {}: {e}", dir.display()))?;
        }
        let data_dir = dir.join("data");
        let log_path = dir.join("postgres.log");
        let pg = Postgres {
            ca_path: dir.join("ca.pem"),
            dir,
            data_dir,
            bin_dir,
            port: 0,
            ca_der: Vec::new(),
            log_path,
        };

        // Tell the watchdog how to stop the server before anything can be left running.
        let stop = pg.as_postgres("pg_ctl");
        let stop = format!(
            "cd / && {} -D '{}' stop -m immediate -w -t 20\n",
            shell_words(&stop),
            pg.data_dir.display()
        );
        write_file(&run_root().join("on-exit.sh"), stop, 0o700);

        let mut initdb = pg.as_postgres("initdb");
        initdb
            .arg("-D")
            .arg(&pg.data_dir)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&pg.dir);
        let out = run_with_timeout(&mut initdb, Duration::from_secs(120));
        if !out.status.success() {
            return Err(format!("initdb failed\n{}", describe(&out)));
        }

        let TestPki {
            ca_pem,
            ca_der,
            server_cert_pem,
            server_key_pem,
        } = generate_pki();
        let cert_path = pg.dir.join("server.crt");
        let key_path = pg.dir.join("server.key");
        write_file(&pg.ca_path, &ca_pem, 0o644);
        write_file(&cert_path, &server_cert_pem, 0o644);
        write_file(&key_path, &server_key_pem, 0o600);
        if let Some((uid, gid)) = owner {
            for p in [&pg.ca_path, &cert_path, &key_path] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| format!("chown postgres {}: {e}", p.display()))?;
            }
        }

        // pg_hba.conf is first-match: members of the method groups first, then scram for all.
        let hba = format!(
            "# written by the ward test harness\n\
             local all all trust\n\
             host all +{MD5_GROUP} 127.0.0.1/32 md5\n\
             host all +{PASSWORD_GROUP} 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n"
        );
        std::fs::write(pg.data_dir.join("pg_hba.conf"), hba)
            .map_err(|e| format!("write pg_hba.conf: {e}"))?;

        let base_conf = format!(
            "\n# ward test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             full_page_writes = off\n\
             synchronous_commit = off\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             ssl = on\n\
             ssl_cert_file = '{}'\n\
             ssl_key_file = '{}'\n\
             log_connections = on\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            pg.dir.display(),
            cert_path.display(),
            key_path.display()
        );
        append(&pg.data_dir.join("postgresql.conf"), &base_conf)?;

        let mut pg = pg;
        pg.ca_der = ca_der;
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            append(
                &pg.data_dir.join("postgresql.conf"),
                &format!("port = {port}\n"),
            )?;
            let mut start = pg.as_postgres("pg_ctl");
            start
                .arg("-D")
                .arg(&pg.data_dir)
                .arg("-l")
                .arg(&pg.log_path)
                .args(["-w", "-t", "60", "start"])
                .current_dir(&pg.dir);
            let out = run_with_timeout(&mut start, Duration::from_secs(90));
            if out.status.success() {
                pg.port = port;
                pg.admin_sql(
                    "postgres",
                    &format!(
                        "CREATE ROLE {MD5_GROUP} NOLOGIN; CREATE ROLE {PASSWORD_GROUP} NOLOGIN"
                    ),
                );
                return Ok(pg);
            }
            let log = std::fs::read_to_string(&pg.log_path).unwrap_or_default();
            last_error = format!(
                "pg_ctl start failed\n{}\n--- server log ---\n{log}",
                describe(&out)
            );
            if !log.contains("could not bind") && !log.contains("already in use") {
                break;
            }
        }
        Err(last_error)
    }

    /// A command running `program` from the bin dir as the `postgres` OS user when the tests
    /// run as root (initdb and postgres refuse root), as the current user otherwise.
    fn as_postgres(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        if super::is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }
}

/// A `psql` command (from the PostgreSQL bin dir when found, else `psql` on PATH) with
/// libpq environment variables cleared. Does not start the harness server.
pub fn psql_command() -> Command {
    let psql = find_bin_dir()
        .map(|d| d.join("psql"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let mut cmd = Command::new(psql);
    clear_libpq_env(&mut cmd);
    cmd
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("append to {}: {e}", path.display()))
}

/// The directory with initdb/pg_ctl: `$WARD_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<N>/bin`, else `pg_config --bindir`.
fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("WARD_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    Err(
        "no PostgreSQL server binaries found (looked for /usr/lib/postgresql/*/bin/initdb and \
         pg_config --bindir). Install them with `make deps` (Debian package postgresql-15) or \
         set WARD_TEST_PG_BIN."
            .into(),
    )
}

/// uid and gid of the `postgres` OS user.
fn postgres_ids() -> Result<(u32, u32), String> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            "running as root but there is no `postgres` OS user to run PostgreSQL as \
             (it comes with the Debian postgresql packages: run `make deps`)"
                .to_string()
        })
}

/// `name` made into a valid, unique lower-case identifier.
fn unique_name(name: &str) -> String {
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if clean.is_empty() || clean.starts_with(|c: char| c.is_ascii_digit()) {
        clean.insert(0, 'x');
    }
    format!("{clean}_{}", unique_suffix())
}

/// Double-quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Single-quotes an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}
