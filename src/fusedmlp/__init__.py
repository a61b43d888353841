"""fusedmlp"""
