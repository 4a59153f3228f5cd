from .services import can_read_studies, can_upload, is_admin


def roles(request):
    user = getattr(request, "user", None)
    return {
        "user_can_upload": bool(user) and can_upload(user),
        "user_can_read": bool(user) and can_read_studies(user),
        "user_is_admin": bool(user) and is_admin(user),
    }
