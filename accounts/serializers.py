"""Wire shapes of the auth endpoints (camelCase, as the reference API)."""

from rest_framework import serializers

from .models import User


class UserSerializer(serializers.ModelSerializer):
    roles = serializers.ListField(child=serializers.CharField(), read_only=True)
    createdAt = serializers.DateTimeField(source="date_joined", read_only=True)  # noqa: N815

    class Meta:
        model = User
        fields = ["id", "email", "roles", "createdAt"]
        read_only_fields = fields


class CredentialsSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class LoginSerializer(CredentialsSerializer):
    # Login must not reveal which emails exist, so no format rule beyond "a string".
    email = serializers.CharField(max_length=254)


class RefreshSerializer(serializers.Serializer):
    refreshToken = serializers.CharField(max_length=2048)  # noqa: N815


class TokenPairSerializer(serializers.Serializer):
    accessToken = serializers.CharField()  # noqa: N815
    refreshToken = serializers.CharField()  # noqa: N815


class AuthResponseSerializer(TokenPairSerializer):
    user = UserSerializer()
