"""Token balances, grants and the ledger."""

from __future__ import annotations

from archive_svc import convert, store
from archive_svc.checks import ArchivePart, owner_violations, parse_uuid
from archive_svc.paging import page_limit
from assay.archive.v1 import archive_service_pb2 as pb
from assaylib import validation as v
from assaylib.errors import FieldViolation


class Tokens(ArchivePart):
    """GetTokenBalance, GrantTokens, ListLedgerEntries and SetUserTier."""

    async def set_tier(self, request: pb.SetUserTierRequest) -> pb.SetUserTierResponse:
        """Record the tier of a user whose tokens name none (empty: remove it)."""
        violations = v.id_violations(request.user_id, "user_id")
        tiers = self.policy.tiers
        priority = tiers.priority_of(request.tier) if request.tier else 0
        if priority is None:
            names = ", ".join(tiers.names)
            violations.append(
                FieldViolation("tier", f"unknown tier {request.tier!r} (ASSAY_TIERS: {names})")
            )
        v.require_valid(violations)
        await store.set_user_tier(self.pool, request.user_id, request.tier)
        return pb.SetUserTierResponse(
            user_id=request.user_id,
            tier=request.tier or tiers.default.tier,
            priority=priority or 0,
        )

    async def balance(self, user_id: str) -> int:
        """A user's balance."""
        v.require_valid(v.id_violations(user_id, "user_id"))
        return await store.balance_of(self.pool, user_id)

    async def grant(self, request: pb.GrantTokensRequest) -> pb.GrantTokensResponse:
        """Credit a user's balance."""
        violations = v.id_violations(request.user_id, "user_id")
        violations += v.text_violations(request.reason, "reason")
        if request.amount <= 0:
            violations.append(FieldViolation("amount", "must be a positive number of tokens"))
        v.require_valid(violations)
        row = await store.grant(self.pool, request.user_id, request.amount, request.reason)
        return pb.GrantTokensResponse(
            balance=row["balance"], entry=convert.ledger_entry_to_proto(row)
        )

    async def ledger(self, request: pb.ListLedgerEntriesRequest) -> pb.ListLedgerEntriesResponse:
        """A page of ledger entries, newest first."""
        limit = page_limit(request.page_size)
        v.require_valid(owner_violations(request.user_id))
        job_id = parse_uuid(request.job_id, "job_id") if request.job_id else None
        scope = f"ledger\0{request.user_id}\0{job_id or ''}"
        after = self.pages.decode(request.page_token, scope, (int,))
        before = after[0] if after else None
        rows = await store.ledger_page(self.pool, request.user_id, job_id, before, limit + 1)
        page, token = self.pages.page(rows, limit, scope, lambda r: (r["entry_id"],))
        return pb.ListLedgerEntriesResponse(
            entries=[convert.ledger_entry_to_proto(r) for r in page], next_page_token=token
        )
