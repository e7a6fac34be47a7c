"""megohand.models"""
