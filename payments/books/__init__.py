"""The books as ops and account holders see them: funding, balances, payouts, reconciliation, audit export,
reports."""
