"""edge_distill"""
