"""megohand.data"""
