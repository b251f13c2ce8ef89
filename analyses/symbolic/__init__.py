"""Semantics vs symbols: do members follow rules given in the prompt when familiar meaning is stripped or
contradicted?"""
