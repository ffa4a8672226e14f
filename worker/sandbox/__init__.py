"""Stand-ins for the world outside: the platform simulator, a reference HIS, and the demos."""
