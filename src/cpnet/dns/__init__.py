"""The identifier gateway on real DNS: a Knot DNS server fed by the hub.

- ``zonekey``: the zone's Ed25519 signing key (made at ``cpnet hub init``) and its trust anchor
  (DNSKEY, DS), computed here so that an operator gets the DS before any server runs.
- ``zonediff``: the pure diff between the RRsets the registry asks for and those published,
  as Knot zone-transaction commands.
- ``knot``: the shell around ``knotd`` / ``knotc`` / ``keymgr``: configuration, start, stop,
  batched zone transactions.
- ``publisher``: the reconcile loop that keeps the zone in step with the registry (leader only).

The mapping of identifiers to names and records is ``cpnet.ident.dns`` (pure, shared with the
client). docs/identifiers.md, "Running the DNS gateway", is the operator's guide.
"""
