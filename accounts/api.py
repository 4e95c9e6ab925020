"""Auth endpoints: login, refresh (rotating), register, me."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer

from . import services
from .serializers import (
    AuthResponseSerializer,
    CredentialsSerializer,
    LoginSerializer,
    RefreshSerializer,
    TokenPairSerializer,
    UserSerializer,
)


class AuthThrottle(ScopedRateThrottle):
    scope_attr = "throttle_scope"


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
        responses={200: AuthResponseSerializer},
        summary="Log in with email and password",
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
        responses={200: TokenPairSerializer},
        summary="Exchange a refresh token for a new pair (the old one stops working)",
    )
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        refresh = TokenRefreshSerializer(
            data={"refresh": serializer.validated_data["refreshToken"]}
        )
        try:
            refresh.is_valid(raise_exception=True)
        except (TokenError, InvalidToken) as exc:
            raise exceptions.AuthenticationFailed(
                "The refresh token is invalid, expired or already used."
            ) from exc
        return Response(
            {
                "accessToken": refresh.validated_data["access"],
                "refreshToken": refresh.validated_data["refresh"],
            }
        )


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
