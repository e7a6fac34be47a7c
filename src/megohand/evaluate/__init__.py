"""megohand.evaluate"""
