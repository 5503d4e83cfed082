"""dsvl.model"""
