//! TLS pieces for tests: a CA made with rcgen, server certificates it
//! signs (expired on demand), and Debian's nginx (`common::nginx_command`)
//! terminating TLS on a loopback port in front of a plain HTTP server, with
//! an access log that tells connections and resumed handshakes apart.
//! Everything is removed or killed on drop.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::common::{eventually, kill_group, nginx_command, TempDir};
use crate::upstream::free_port;

/// A CA made for the test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost, and its key (PEM);
    /// `expired`: valid only in 2020.
    pub fn server_cert(&self, expired: bool) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("server params");
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// nginx terminating TLS on a loopback port in front of `upstream_port`.
pub struct Nginx {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Nginx {
    pub fn start(upstream_port: u16, cert: &(String, String)) -> Nginx {
        let dir = TempDir::new("https-nginx");
        let cert_path = dir.write("server.pem", &cert.0);
        let key_path = dir.write("server.key", &cert.1);
        let port = free_port();
        let logs = dir.0.join("logs");
        let logs = logs.display();
        let http = format!(
            "log_format tls '$connection $connection_requests $ssl_session_reused $ssl_protocol $status $request';\n\
             access_log {logs}/access.log tls;\n\
             server {{\n\
               listen 127.0.0.1:{port} ssl;\n\
               ssl_certificate {};\n\
               ssl_certificate_key {};\n\
               ssl_protocols TLSv1.2 TLSv1.3;\n\
               ssl_session_cache shared:TLS:1m;\n\
               keepalive_requests 100000;\n\
               keepalive_timeout 60s;\n\
               location / {{\n\
                 proxy_pass http://127.0.0.1:{upstream_port};\n\
                 proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n\
                 proxy_set_header Host 127.0.0.1:{upstream_port};\n\
                 proxy_buffering off;\n\
                 proxy_request_buffering off;\n\
                 proxy_read_timeout 60s;\n\
               }}\n\
             }}",
            cert_path.display(),
            key_path.display()
        );
        let child = nginx_command(&dir, &http)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, port, dir };
        let up = eventually(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(nginx.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            up && matches!(nginx.child.try_wait(), Ok(None)),
            "nginx did not start on port {port}:\n{}",
            nginx.log("error.log")
        );
        nginx
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/mcp", self.port)
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join("logs").join(name)).unwrap_or_default()
    }

    /// Per TLS connection of the access log: whether its first request's
    /// handshake resumed a session (`$ssl_session_reused` is `r`).
    pub fn connections(&self) -> BTreeMap<u64, bool> {
        let mut conns = BTreeMap::new();
        for line in self.log("access.log").lines() {
            let mut fields = line.split_whitespace();
            let (Some(conn), Some(requests), Some(reused)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(conn) = conn.parse::<u64>() else {
                continue;
            };
            let entry = conns.entry(conn).or_insert(false);
            if requests == "1" {
                *entry = reused == "r";
            }
        }
        conns
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx's worker is in its process group: none is left behind.
        kill_group(&mut self.child);
    }
}
