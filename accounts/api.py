"""Auth endpoints: login, refresh (rotating), logout, register, me."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .serializers import (
    AuthResponseSerializer,
    CredentialsSerializer,
    LoginSerializer,
    RefreshSerializer,
    TokenPairSerializer,
    UserSerializer,
)
from .throttling import AuthThrottle


class PublicAuthApi(APIView):
    """Anonymous, throttled endpoints; a failed credential check is a 401 (not DRF's 403)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AuthThrottle]
    throttle_scope = "auth"

    def get_authenticate_header(self, request):
        return 'Bearer realm="api"'


class LoginApi(PublicAuthApi):
    @extend_schema(
        tags=["auth"],
        request=LoginSerializer,
        responses={
            200: AuthResponseSerializer,
            401: OpenApiResponse(description="Wrong email or password (the same answer)."),
        },
        summary="Log in with email and password",
        description=(
            "Throttled per client address (AUTH_THROTTLE_RATE) and per account: "
            "LOGIN_LOCKOUT_ATTEMPTS failed logins for one email lock it for "
            "LOGIN_LOCKOUT_SECONDS, whatever the address (429)."
        ),
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_authenticate(request=request, **serializer.validated_data)
        if user is None:
            # One answer for an unknown email and a wrong password.
            raise exceptions.AuthenticationFailed("Invalid email or password.")
        return Response({**services.tokens_for_user(user), "user": UserSerializer(user).data})


class RefreshApi(PublicAuthApi):
    @extend_schema(
        tags=["auth"],
        request=RefreshSerializer,
        responses={
            200: TokenPairSerializer,
            401: OpenApiResponse(description="Invalid, expired, revoked or already used."),
        },
        summary="Exchange a refresh token for a new pair (the old one stops working)",
        description=(
            "Refresh tokens rotate. Presenting one that was already exchanged revokes its whole "
            "chain (every token of that login), as does a password change or deactivation."
        ),
    )
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            pair = services.token_refresh(refresh_token=serializer.validated_data["refreshToken"])
        except services.TokenRejected as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        return Response(pair)


class LogoutApi(PublicAuthApi):
    @extend_schema(
        tags=["auth"],
        request=RefreshSerializer,
        responses={
            204: OpenApiResponse(description="The token's session is revoked."),
            401: OpenApiResponse(description="Not a refresh token of ours, or expired."),
        },
        summary="Log out: revoke this refresh token and every token rotated from its login",
        description=(
            "Safe to repeat. Access tokens already issued stay valid until they expire "
            "(JWT_ACCESS_TOKEN_MINUTES); a password change revokes those too."
        ),
    )
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            services.token_family_logout(refresh_token=serializer.validated_data["refreshToken"])
        except services.TokenRejected as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class RegisterApi(PublicAuthApi):
    @extend_schema(
        tags=["auth"],
        request=CredentialsSerializer,
        responses={
            201: AuthResponseSerializer,
            409: OpenApiResponse(description="An account with this email exists."),
        },
        summary="Create an account (disabled when ALLOW_REGISTRATION=false)",
    )
    def post(self, request):
        if not settings.ALLOW_REGISTRATION:
            raise exceptions.PermissionDenied("Registration is disabled on this server.")
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = services.user_register(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError({"password": list(exc.messages)}) from exc
        return Response(
            {**services.tokens_for_user(user), "user": UserSerializer(user).data},
            status=status.HTTP_201_CREATED,
        )


class MeApi(APIView):
    @extend_schema(tags=["auth"], responses={200: UserSerializer}, summary="The current user")
    def get(self, request):
        return Response(UserSerializer(request.user).data)
