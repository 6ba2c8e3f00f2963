//! `inventory/<env>/keypairs.yaml`: keys apimon registers (a parsed
//! OpenSSH public key) and existing keypairs it only references.

use super::SectionCheck;
use crate::model::{Keypair, PublicKey, Sections};

/// Checks the keypairs; invalid ones are left out of the result.
pub(in crate::model) fn check(cx: &mut SectionCheck<'_>, _: &Sections) -> Vec<Keypair> {
    let (check, doc) = (&mut *cx.check, &cx.inventory.keypairs);
    let keypairs = &doc.value.keypairs;
    check.unique(
        doc,
        "keypair",
        keypairs.iter().enumerate().map(|(i, k)| (k.name.as_str(), format!("keypairs[{i}].name"))),
    );
    let mut checked = Vec::new();
    for (i, keypair) in keypairs.iter().enumerate() {
        match (&keypair.public_key, keypair.existing) {
            (Some(_), true) => check.error(
                doc,
                &format!("keypairs[{i}].existing"),
                "`existing: true` with a `public_key`; expected one: a key apimon registers, or an existing keypair it only references",
            ),
            (None, false) => check.error(
                doc,
                &format!("keypairs[{i}]"),
                "no `public_key`; expected an OpenSSH public key line, or `existing: true` for a keypair the project already has",
            ),
            (None, true) => checked.push(Keypair { name: keypair.name.clone(), public_key: None }),
            (Some(line), false) => match PublicKey::parse(line) {
                Ok(public_key) => checked
                    .push(Keypair { name: keypair.name.clone(), public_key: Some(public_key) }),
                Err(why) => check.error(
                    doc,
                    &format!("keypairs[{i}].public_key"),
                    format!("invalid public key ({why}); expected an OpenSSH public key line like `ssh-ed25519 AAAA... comment`"),
                ),
            },
        }
    }
    checked
}
