"""megohand.render"""
