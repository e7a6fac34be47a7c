"""megohand.inference"""
