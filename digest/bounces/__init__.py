"""Bounces and complaints: parsing (:mod:`.dsn`), the policy (:mod:`.policy`), VERP
(:mod:`.verp`) and reading the bounce mailbox (:mod:`.intake`).

Kept light: importing the package does not import the IMAP client.
"""
