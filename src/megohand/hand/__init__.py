"""megohand.hand"""
