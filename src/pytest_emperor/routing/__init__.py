"""Routing: the one route map (Host -> app -> socket) and the private nginx that applies it."""
