//! Sending one delivery to one destination: a webhook (JSON, signed with
//! HMAC-SHA256), a Matrix room (client-server API, the delivery's id as
//! the transaction id, so a retry is one message), a mailbox (SMTP,
//! STARTTLS required before anything else).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::outbox::Delivery;
use crate::model::Sensitive;

/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A route's destination with its secrets resolved.
#[derive(Clone)]
pub enum Target {
    /// POST of the JSON body.
    Webhook {
        /// URL.
        url: String,
        /// HMAC key.
        secret: Sensitive<String>,
    },
    /// A Matrix room.
    Matrix {
        /// Homeserver base URL.
        homeserver: String,
        /// Room id.
        room: String,
        /// Access token.
        token: Sensitive<String>,
    },
    /// SMTP with STARTTLS.
    Email {
        /// Server.
        host: String,
        /// Port.
        port: u16,
        /// Extra CA bundle (PEM).
        ca_pem: Option<Vec<u8>>,
        /// `From:`.
        from: String,
        /// `To:`.
        to: Vec<String>,
        /// Login.
        login: Option<(String, Sensitive<String>)>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Webhook { url, .. } => write!(f, "webhook {}", crate::url::redact_url(url)),
            Self::Matrix { homeserver, room, .. } => write!(f, "matrix {room} at {homeserver}"),
            Self::Email { host, port, to, .. } => write!(f, "email to {to:?} via {host}:{port}"),
        }
    }
}

/// `sha256=<hex>` of `body` under `key`: the `X-Apimon-Signature` header.
pub fn signature(key: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `delivery` to `target` once.
///
/// # Errors
/// Why the receiver did not take it (never a secret).
pub async fn send(
    http: &reqwest::Client,
    target: &Target,
    delivery: &Delivery,
) -> Result<(), String> {
    let message = &delivery.message;
    match target {
        Target::Webhook { url, secret } => {
            let body = serde_json::to_vec(&message.body).map_err(|e| e.to_string())?;
            let response = http
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Apimon-Signature", signature(secret.expose(), &body))
                .header("X-Apimon-Delivery", delivery.id())
                .body(body)
                .timeout(TIMEOUT)
                .send()
                .await
                .map_err(|e| crate::error::chain(&e))?;
            answered(response).await
        }
        Target::Matrix { homeserver, room, token } => {
            let mut url = reqwest::Url::parse(homeserver).map_err(|e| e.to_string())?;
            url.path_segments_mut()
                .map_err(|()| "the homeserver URL takes no path".to_owned())?
                .pop_if_empty()
                .extend(["_matrix", "client", "v3", "rooms", room, "send", "m.room.message"])
                .push(&delivery.id());
            let body = serde_json::json!({"msgtype": "m.text", "body": message.text});
            let response = http
                .put(url)
                .bearer_auth(token.expose())
                .json(&body)
                .timeout(TIMEOUT)
                .send()
                .await
                .map_err(|e| crate::error::chain(&e))?;
            answered(response).await
        }
        Target::Email { host, port, ca_pem, from, to, login } => {
            email(host, *port, ca_pem.as_deref(), from, to, login.as_ref(), delivery).await
        }
    }
}

/// A 2xx, or the status and the start of the body.
async fn answered(response: reqwest::Response) -> Result<(), String> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = crate::httpbody::read_limited(response, 512).await.unwrap_or_default();
    Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()))
}

async fn email(
    host: &str,
    port: u16,
    ca_pem: Option<&[u8]>,
    from: &str,
    to: &[String],
    login: Option<&(String, Sensitive<String>)>,
    delivery: &Delivery,
) -> Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let message = &delivery.message;
    let mut builder = lettre::Message::builder()
        .from(from.parse().map_err(|e| format!("From {from}: {e}"))?)
        .subject(message.subject.clone())
        .message_id(Some(format!("<{}@apimon>", delivery.id())))
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for address in to {
        builder = builder.to(address.parse().map_err(|e| format!("To {address}: {e}"))?);
    }
    let mail = builder.body(message.text.clone()).map_err(|e| e.to_string())?;
    let mut tls = TlsParameters::builder(host.to_owned());
    if let Some(pem) = ca_pem {
        let certificate = Certificate::from_pem(pem).map_err(|e| format!("ca_file: {e}"))?;
        tls = tls.add_root_certificate(certificate);
    }
    let tls = tls.build_rustls().map_err(|e| e.to_string())?;
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(Tls::Required(tls))
        .timeout(Some(TIMEOUT));
    if let Some((user, password)) = login {
        transport =
            transport.credentials(Credentials::new(user.clone(), password.expose().clone()));
    }
    transport.build().send(mail).await.map(drop).map_err(|e| crate::error::chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
