"""Textual backdoors: attacks (PuncAttack, BadNets, AddSent) and defences (ONION, STRIP, RAP, BKI, CUBE)."""
