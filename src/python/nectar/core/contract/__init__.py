"""Core's contract: the part of core that marketing and admin may import.

It holds the service-to-service API (request and response shapes, and a client that calls core over
HTTP with a service credential); nothing in it touches core's tables or internals.
"""
