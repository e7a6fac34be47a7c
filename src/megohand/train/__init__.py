"""megohand.train"""
