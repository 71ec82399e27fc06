"""Durability and accounting: the ledger, the rejects file and the run summary."""
