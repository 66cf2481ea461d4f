//! A PostgreSQL server for one test run, from Debian's `postgresql` package: `initdb`
//! and `pg_ctl` in a scratch directory, listening on a loopback port only. PostgreSQL
//! refuses to run as root, so as root it runs as the `postgres` user (`runuser`).

use std::path::PathBuf;
use std::process::Command;

use super::Scratch;

/// A running server; stopped and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: Scratch,
    pub port: u16,
    as_root: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// The newest installed server's `bin` directory.
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (Debian: apt-get install postgresql)")
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, p)| p.join("initdb").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("no PostgreSQL server under /usr/lib/postgresql")
            .1
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// initdb and start on a free loopback port.
    pub fn start() -> Self {
        let bin = Self::bin_dir();
        let dir = Scratch::new("postgres");
        let as_root = is_root();
        let data = dir.path("data");
        std::fs::create_dir_all(&data).expect("data directory");
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the scratch directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Postgres {
            bin,
            dir,
            port,
            as_root,
        };
        let data = data.to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            pg.dir.0.display()
        );
        let log = pg.dir.path("log").to_string_lossy().into_owned();
        pg.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        );
        pg
    }

    /// The URL of database `name` (created first).
    pub fn database(&self, rt: &tokio::runtime::Runtime, name: &str) -> String {
        let admin = format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        );
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&admin).await.expect("connect");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create database");
            pool.close().await;
        });
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path("data").to_string_lossy().into_owned();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
    }
}
