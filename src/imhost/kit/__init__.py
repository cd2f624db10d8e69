"""Pure helpers shared by every package: money, clock, ids, jid, crypto, errors.

Nothing in ``kit`` imports anything else of imhost.
"""
