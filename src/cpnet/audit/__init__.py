"""The tamper-evident audit chain (docs/security.md, "Audit chain")."""
