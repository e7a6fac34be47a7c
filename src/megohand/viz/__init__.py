"""megohand.viz"""
